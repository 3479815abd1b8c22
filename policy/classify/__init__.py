"""What kind of mail a received message is: human, auto-reply, bounce, complaint, auto-generated.

Pure rules over a message's headers and, for reports, its light parse; imports only policy.bounces.
"""
