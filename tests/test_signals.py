"""Ctrl+C stays the job's around Ray's fit() calls (``unipose_ray.runtime.signals``)."""

from __future__ import annotations

import signal
import threading

from unipose_ray.runtime.signals import handlers_restored


def test_handlers_installed_inside_the_block_give_way_to_the_earlier_ones():
    def job(signum, frame):  # the job's own handler
        raise KeyboardInterrupt

    before = {s: signal.signal(s, job) for s in (signal.SIGINT, signal.SIGUSR1)}
    try:
        with handlers_restored(signal.SIGINT, signal.SIGUSR1):
            for s in before:  # what Ray Train and Tune do in their fit()
                signal.signal(s, lambda signum, frame: None)
        assert all(signal.getsignal(s) is job for s in before)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_outside_the_main_thread_nothing_is_touched():
    errors = []

    def run():
        try:
            with handlers_restored(signal.SIGINT):  # signal.signal would raise here
                pass
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors == []
