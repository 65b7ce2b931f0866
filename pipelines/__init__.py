"""kfp v2 pipelines (wiring only), runnable locally with kfp.local or compiled to IR YAML."""
