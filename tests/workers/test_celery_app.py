"""The Celery app's configuration: queues, reliability settings, beat schedule, broker transports."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from celery.schedules import crontab

from config.settings import SettingsError, load_settings
from tasks import runtime
from workers.app import beat_schedule, create_celery, parse_crontab

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def _settings(tmp_path, **env):
    environ = {"APP_ENV": "test", "DATA_DIR": str(tmp_path), **env}
    return load_settings(environ=environ)


def test_reliability_settings_queues_and_routes(tmp_path):
    app = create_celery(_settings(tmp_path, TASK_VISIBILITY_TIMEOUT_S="7200", REDIS_URL="redis://h:1/3"))
    conf = app.conf
    assert conf.broker_url == "redis://h:1/3"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.task_ignore_result
    assert conf.worker_prefetch_multiplier == 1
    assert conf.result_backend is None  # state lives in the database; sends never wait on results
    assert conf.broker_transport_options["visibility_timeout"] == 7200
    assert sorted(q.name for q in conf.task_queues) == ["default", "inference", "training"]
    assert conf.task_default_queue == "default"
    assert conf.task_routes["tasks.classify_batch"]["queue"] == "inference"
    assert conf.task_routes["tasks.train_model"]["queue"] == "training"
    assert app.amqp.router.route({}, "tasks.scheduled_retrain")["queue"].name == "training"
    assert app.amqp.router.route({}, "tasks.sweep")["queue"].name == "default"
    # Flower and `celery events` see every task, not only the workers.
    assert conf.worker_send_task_events and conf.task_send_sent_event


def test_beat_schedule_from_crontab_string(tmp_path):
    schedule = beat_schedule(_settings(tmp_path, RETRAIN_SCHEDULE="30 2 * * 1"))
    entry = schedule["scheduled-retrain"]
    assert entry["task"] == "tasks.scheduled_retrain" and entry["options"]["queue"] == "training"
    assert entry["schedule"] == crontab(minute="30", hour="2", day_of_week="1")
    without = beat_schedule(_settings(tmp_path, RETRAIN_SCHEDULE=""))
    assert set(without) == {"sweep"}
    assert set(create_celery(_settings(tmp_path, RETRAIN_SCHEDULE="")).conf.beat_schedule) == {"sweep"}


def test_beat_sweeps_every_half_lease(tmp_path):
    """Stranded scans and runs are re-sent by beat's sweeper, twice per SCAN_LEASE_S (5-60 s)."""
    entry = beat_schedule(_settings(tmp_path, RETRAIN_SCHEDULE="30 2 * * 1"))["sweep"]
    assert entry["task"] == "tasks.sweep" and entry["options"]["queue"] == "default"
    assert entry["schedule"] == 30
    assert beat_schedule(_settings(tmp_path, SCAN_LEASE_S="10"))["sweep"]["schedule"] == 5
    assert beat_schedule(_settings(tmp_path, SCAN_LEASE_S="600"))["sweep"]["schedule"] == 60


@pytest.mark.parametrize("spec", ["every sunday", "0 3 * *", "61 3 * * *"])
def test_bad_crontab_is_a_settings_error(spec):
    with pytest.raises(SettingsError, match="RETRAIN_SCHEDULE"):
        parse_crontab(spec)


def test_filesystem_broker_keeps_its_folders_under_data_dir(tmp_path):
    app = create_celery(_settings(tmp_path, BROKER_URL="filesystem://"))
    options = app.conf.broker_transport_options
    assert options["data_folder_in"] == options["data_folder_out"]
    for key in ("data_folder_in", "processed_folder"):
        assert options[key].startswith(str(tmp_path)) and __import__("os").path.isdir(options[key])
    assert app.conf.result_backend is None


def test_filesystem_broker_round_trip(tmp_path):
    """A message sent through the embedded transport arrives on the named queue."""
    app = create_celery(_settings(tmp_path, BROKER_URL="filesystem://"))
    app.send_task("tasks.classify_batch", args=[[1, 2], 7], queue="inference")
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("inference")
        message = queue.get(timeout=5)
        assert message.headers["task"] == "tasks.classify_batch"
        assert message.decode()[0] == [[1, 2], 7]
        message.ack()
        queue.close()


def test_importing_the_worker_app_never_imports_tensorflow(tmp_path):
    """The prefork parent imports workers and every task module without loading TF or Keras."""
    code = ("import sys, json, workers; app = workers.celery; app.loader.import_default_modules(); "
            "print(json.dumps({'tasks': sorted(t for t in app.tasks if t.startswith('tasks.')), "
            "'heavy': [m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules]}))")
    env = {"PATH": "/usr/bin:/bin", "APP_ENV": "production", "DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert {"tasks.classify_batch", "tasks.train_model", "tasks.scheduled_retrain"} <= set(result["tasks"])


def test_precision_setting():
    assert runtime.resolve_precision("float32") == "float32"
    assert runtime.resolve_precision("bfloat16") == "bfloat16"
    from models.precision import bfloat16_supported

    expected = "bfloat16" if bfloat16_supported() else "float32"
    assert runtime.resolve_precision("auto") == expected
    with pytest.raises(ValueError):
        runtime.resolve_precision("float16")


def test_broker_key_prefix_isolates_queues(tmp_path, redis_url):
    """Two apps with different BROKER_KEY_PREFIX on one Redis db never see each other's messages."""
    import redis

    one = create_celery(_settings(tmp_path, REDIS_URL=redis_url, BROKER_KEY_PREFIX="one:"))
    two = create_celery(_settings(tmp_path, REDIS_URL=redis_url, BROKER_KEY_PREFIX="two:"))
    assert one.conf.broker_transport_options["global_keyprefix"] == "one:"
    one.send_task("tasks.classify_batch", args=[[1], 1], queue="inference")
    client = redis.Redis.from_url(redis_url)
    assert client.llen("one:inference") == 1 and client.llen("inference") == 0
    with two.connection_for_read() as conn:
        queue = conn.SimpleQueue("inference")
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.5)
        queue.close()
    client.close()


def test_dispatch_sends_with_an_app_matching_broker_and_prefix(tmp_path):
    from tasks.dispatch import celery_for

    first = _settings(tmp_path, REDIS_URL="redis://h:1/3", BROKER_KEY_PREFIX="a:")
    current = create_celery(first)
    current.set_current()
    assert celery_for(first) is current
    other = celery_for(first.replace(broker_key_prefix="b:"))
    assert other is not current and other.conf.broker_transport_options["global_keyprefix"] == "b:"
