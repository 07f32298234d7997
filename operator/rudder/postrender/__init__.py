"""Post-renderers: kustomize and Helm 4 Wasm plugins, run in a sandbox on what a chart renders."""
