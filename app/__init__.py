"""Composition: settings, ingestion, watcher, indexer, assistant, CLI.

Imports lclm_core and latent_store; never imported by them.
"""
