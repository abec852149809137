"""The data sources of ``python -m train prepare``, one module each."""
