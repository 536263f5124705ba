"""The elected hub: council elections with terms, leases and fencing."""
