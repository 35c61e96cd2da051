"""The service layer: every rule about AI conversation records, shared by the public and internal routes."""
