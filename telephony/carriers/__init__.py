"""Carrier implementations behind `telephony.carriers.base.Carrier`."""
