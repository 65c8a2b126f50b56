"""The operator's side: the admin password now, the web UI later."""
