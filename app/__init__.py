"""What users touch: the mmtower CLI, the recommend client, add-items, the run summary, report and dashboard."""
