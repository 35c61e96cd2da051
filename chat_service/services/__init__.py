"""The service layer: every rule about sessions and messages, shared by REST, view routes and sockets."""
