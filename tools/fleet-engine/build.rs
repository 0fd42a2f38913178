// The gRPC service routing for envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit,
// generated without .proto files (tonic-build's manual mode), so the build needs no protoc.
fn main() {
    let service = tonic_build::manual::Service::builder()
        .name("RateLimitService")
        .package("envoy.service.ratelimit.v3")
        .method(
            tonic_build::manual::Method::builder()
                .name("should_rate_limit")
                .route_name("ShouldRateLimit")
                .input_type("crate::rls::RateLimitRequest")
                .output_type("crate::rls::RateLimitResponse")
                .codec_path("tonic::codec::ProstCodec")
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .build_transport(false)
        .compile(&[service]);
}
