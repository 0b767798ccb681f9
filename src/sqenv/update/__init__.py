"""Update: change a published install (`sqenv update`), keep its layers few (`compact`).

The second flow beside create. `apply` runs a builder in update mode over the
mounted layers (`layers`) and publishes the result as a new version through
`sqenv.publish.versions`; `compact` repacks all layers into one image; `session` is what both share.
"""
