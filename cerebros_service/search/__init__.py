"""The search: space → build → train → select. Knows nothing of Pythonx or JSON."""
