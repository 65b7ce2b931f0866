"""Thin kfp components: each unpacks artifacts and calls one library function."""
