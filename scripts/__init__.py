"""Operations scripts: the local runner behind `make run` and its helpers."""
