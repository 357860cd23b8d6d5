"""The vibbench harness: models, data, methods, training, surgery, measurement, records, report."""
