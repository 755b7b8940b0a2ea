"""The bootstrap program: what each AWS account needs once before CI can preview, push and deploy."""
