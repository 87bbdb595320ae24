"""Report rendering for people (charts). Imported only by the CLI and the demo, never by a Lambda handler."""
