"""Reference data read at import time: referrer lists and GA4's source categories."""
