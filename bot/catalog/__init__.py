"""The personalised PDF catalogue: products, templates, safe fetching and the render pool."""
