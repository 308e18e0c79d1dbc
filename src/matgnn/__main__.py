from matgnn.cli.main import app

app(prog_name="matgnn")
