"""GET /api/chat/search: the user's messages and session titles, Chinese and English (issue 14)."""
