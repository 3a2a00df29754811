"""hpcm.entropy"""
