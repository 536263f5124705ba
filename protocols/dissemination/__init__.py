"""Record dissemination: eager push plus push-pull anti-entropy."""
