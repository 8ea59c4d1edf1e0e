"""Thin Celery tasks and the plain functions behind them (dispatch, versions, jobs).

Task modules import nothing heavy: TensorFlow loads in a worker process on its
first inference or training task (see tasks.runtime).
"""
