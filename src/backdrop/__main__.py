from backdrop.cli import app

app(prog_name="backdrop")
