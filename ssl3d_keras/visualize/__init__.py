"""Plots a person looks at: phantoms with label overlays, one example of each proxy task."""
