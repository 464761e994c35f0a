"""The report of a study: its figures and summaries, each a query over the study table."""
