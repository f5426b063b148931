"""The Falcon REST app: resources, auth, and the one place errors become HTTP."""
