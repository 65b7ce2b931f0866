"""Generated-asset storage shared by batch generation and serving.

`cache` turns a request into a deterministic key (stdlib only, cheap to import), `assets` keeps the
audio bytes content-addressed on disk, and `provenance` records where every asset came from. One
implementation of each so the batch pipeline, the API and the release gates agree on what a cache
hit is and where a file lives.
"""
