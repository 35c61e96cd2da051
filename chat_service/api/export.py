"""Export and import of a user's conversations (NDJSON, Markdown). Being built: issue 14."""
