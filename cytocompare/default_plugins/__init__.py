"""Core components, registered through the same hooks that third-party plugins implement."""
