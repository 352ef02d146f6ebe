"""The zoo recipes, installed as the package `ssl3d_keras.zoo_recipes` (see ssl3d_keras/zoo.py)."""
