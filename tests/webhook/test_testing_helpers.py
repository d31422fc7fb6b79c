"""The test helpers a site imports behave as a library's should."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_security_matrix_runs_in_subclasses_only(tmp_path):
    """Importing WebhookSecurityTestCase into a site's test module must not run the
    abstract class there on its own; a subclass runs the whole matrix."""
    module = tmp_path / "test_site_security.py"
    module.write_text(textwrap.dedent("""
        from django_twilio_convlink.testing import WebhookSecurityTestCase

        class SiteWebhookSecurity(WebhookSecurityTestCase):
            webhook_path = "/twilio/webhook/"
    """))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", str(module), "--rootdir", str(ROOT),
         "-c", str(ROOT / "setup.cfg")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    ran = [line for line in result.stdout.splitlines() if "::" in line and "PASSED" in line]
    assert len(ran) >= 10 and all("::SiteWebhookSecurity::" in line for line in ran), result.stdout
