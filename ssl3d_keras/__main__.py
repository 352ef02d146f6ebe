from ssl3d_keras.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="ssl3d")
