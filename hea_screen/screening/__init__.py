"""Screening: candidate spaces, specs, ranking, the partitioned engine, batch jobs and predict
FILE."""
