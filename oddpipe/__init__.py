"""oddpipe: a reproducible pipeline from raw EEG/iEEG recordings to an honestly
evaluated target vs non-target (oddball / P300) classifier."""

__version__ = "0.1.0"
