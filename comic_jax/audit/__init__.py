"""The label audit: the suspected missing labels of a trained run (`suspects`), their orders
(`rankings`) and the review loop that turns a reviewed suspects file into new labels (`review`).
"""
