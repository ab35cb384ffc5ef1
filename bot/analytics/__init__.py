"""Sales analytics from the key stage: figures counted in SQL, /report, the weekly digest, PDF/XLSX/CSV reports."""
