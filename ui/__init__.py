"""Gradio chat UI; calls app services only."""
