"""The benchmark site as a WSGI application, for the throughput part's gunicorn workers.

    DJANGO_SETTINGS_MODULE=bench.settings BENCH_DATABASE_URL=... BENCH_TEST_DATABASE_NAME=test_... \\
        gunicorn bench.wsgi:application

It serves the library's webhook (/twilio/webhook/) and the baseline view
(/baseline/webhook/) from the same processes, so both are measured on equal terms.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

application = get_wsgi_application()
