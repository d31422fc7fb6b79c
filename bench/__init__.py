"""Benchmarks of django-twilio-convlink against bare baselines (see bench/README.rst)."""
