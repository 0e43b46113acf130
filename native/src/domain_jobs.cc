// The jobs that change a domain: the per-domain operations (start, shutdown, destroy, ...; and
// the two per-domain queries that share their shape: jobType, isActive) and defineXML/createXML.
// A domain that turns out not to exist any more is evicted from the connection's cache.
#include <libvirt/virterror.h>

#include "jobs.h"

namespace virtbus {

bool DomainOpJob::Run() {
  virDomainPtr dom = Lookup(uuid_);
  if (dom == nullptr) return false;
  bool ok = Apply(dom);
  virDomainFree(dom);
  if (ok && op_ == DomainOp::kUndefine) core_->cache.Evict(uuid_);
  return ok;
}

bool DomainOpJob::Apply(virDomainPtr dom) {
  switch (op_) {
    case DomainOp::kJobType: {
      virTypedParameterPtr params = nullptr;
      int nparams = 0;
      if (virDomainGetJobStats(dom, &number_, &params, &nparams, 0) == 0) {
        virTypedParamsFree(params, nparams);
        return true;
      }
      FailOn(uuid_, "virDomainGetJobStats");
      if (err_.code != VIR_ERR_NO_SUPPORT) return false;
      // Drivers without job statistics may still have the older virDomainGetJobInfo.
      virDomainJobInfo jobInfo;
      if (virDomainGetJobInfo(dom, &jobInfo) < 0) return FailOn(uuid_, "virDomainGetJobInfo");
      number_ = jobInfo.type;
      return true;
    }
    case DomainOp::kIsActive:
      number_ = virDomainIsActive(dom);
      if (number_ < 0) return FailOn(uuid_, "virDomainIsActive");
      return true;
    case DomainOp::kUndefine:
      return virDomainUndefine(dom) < 0 ? FailOn(uuid_, "virDomainUndefine") : true;
    case DomainOp::kStart:
      return virDomainCreate(dom) < 0 ? FailOn(uuid_, "virDomainCreate") : true;
    case DomainOp::kShutdown:
      return virDomainShutdown(dom) < 0 ? FailOn(uuid_, "virDomainShutdown") : true;
    case DomainOp::kDestroy:
      return virDomainDestroy(dom) < 0 ? FailOn(uuid_, "virDomainDestroy") : true;
    case DomainOp::kSuspend:
      return virDomainSuspend(dom) < 0 ? FailOn(uuid_, "virDomainSuspend") : true;
    case DomainOp::kResume:
      return virDomainResume(dom) < 0 ? FailOn(uuid_, "virDomainResume") : true;
    case DomainOp::kReboot:
      return virDomainReboot(dom, 0) < 0 ? FailOn(uuid_, "virDomainReboot") : true;
  }
  err_.SetInternal("virtbus native: unknown domain operation");
  return false;
}

Napi::Value DomainOpJob::Result(Napi::Env env) {
  switch (op_) {
    case DomainOp::kJobType:
      return Napi::Number::New(env, number_);
    case DomainOp::kIsActive:
      return Napi::Boolean::New(env, number_ == 1);
    default:
      return env.Undefined();
  }
}

bool DefineJob::Run() {
  virDomainPtr dom = create_ ? virDomainCreateXML(conn_, xml_.c_str(), 0) : virDomainDefineXML(conn_, xml_.c_str());
  if (dom == nullptr) return Fail(create_ ? "virDomainCreateXML" : "virDomainDefineXML");
  uuid_ = UuidOf(dom);
  name_ = NameOf(dom);
  core_->cache.Put(uuid_, dom);
  virDomainFree(dom);
  return true;
}

Napi::Value DefineJob::Result(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("uuid", Napi::String::New(env, uuid_));
  o.Set("name", Napi::String::New(env, name_));
  return o;
}

}  // namespace virtbus
