"""The supplier's catalogue: the model as data, imports (feeds, price lists, pictures, versions), the personalised PDF
(templates, safe fetching, the render pool) and the buyer's XLSX price list."""
