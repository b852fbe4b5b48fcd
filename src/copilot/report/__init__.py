"""The report for product: matplotlib figures (plots) and the static HTML page that embeds them (report)."""
