"""Thin DVC stage entry points: read params, call oddpipe/, write outputs."""
