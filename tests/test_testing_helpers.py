"""The test helpers a site imports behave as a library's should."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_pytest_on(tmp_path, body: str) -> subprocess.CompletedProcess:
    module = tmp_path / "test_site_security.py"
    module.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module), "--rootdir", str(ROOT),
         "-c", str(ROOT / "setup.cfg")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_importing_the_security_matrix_does_not_run_it(tmp_path):
    result = run_pytest_on(tmp_path, """
        from django_twilio_convlink.testing import WebhookSecurityTestCase  # noqa: F401

        def test_nothing_else():
            pass
    """)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout and "test_good_signature" not in result.stdout


def test_a_subclass_runs_the_whole_matrix(tmp_path):
    result = run_pytest_on(tmp_path, """
        from django_twilio_convlink.testing import WebhookSecurityTestCase

        class SiteWebhookSecurity(WebhookSecurityTestCase):
            webhook_path = "/twilio/webhook/"
    """)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = int(result.stdout.strip().splitlines()[-1].split()[0])
    assert passed >= 10, result.stdout
