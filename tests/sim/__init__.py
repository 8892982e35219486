"""A deterministic simulation of the pipeline: virtual time, a simulated consumer group, vendor and
dead-letter topic, random schedules of faults, and a checker of the invariants (the README's "Guarantees").

Replay one schedule: ``.venv/bin/python -m tests.sim --seed N`` (``--soak`` for many more).
"""
