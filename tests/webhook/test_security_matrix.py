"""The reusable signature matrix, run against this app's endpoint
(sites subclass the same class for theirs)."""

# The module, not the class, is imported: a TestCase name in this namespace would be
# collected and run a third time.
from django_twilio_convlink import testing


class TestSignatureMatrix(testing.WebhookSecurityTestCase):
    webhook_path = "/twilio/webhook/"


class TestSignatureMatrixWithoutTrailingSlash(testing.WebhookSecurityTestCase):
    webhook_path = "/twilio/webhook"
