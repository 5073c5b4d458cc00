from meterbill.cli import app

app()
