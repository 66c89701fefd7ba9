"""The pipeline's transforms: reading, validating, predicting and writing Arrow record batches."""
