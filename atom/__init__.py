"""ATOM decision logic: four SELECTION scores + thresholds + policy -> a treatment decision."""
