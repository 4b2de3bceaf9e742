from itemflow.cli.main import app

app(prog_name="itemflow")
