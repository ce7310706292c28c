"""The visitor side: the tracking snippet and the contact widget."""
